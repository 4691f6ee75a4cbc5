"""HL7 v2 over MLLP: framing, typed ADT messages, acknowledgements (pure), and the listener.

Everything but :mod:`node.hl7.listener` is pure code over bytes and strings, tested
without sockets; the listener is the only module that does I/O.
"""
