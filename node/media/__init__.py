"""Portable media (IHE PDI): studies written to a folder, a zip or an ISO 9660 image with a
DICOMDIR, and media of any origin read back into the archive through the one ingest.

``fileids`` (the PS3.10/PS3.12 file id rules), ``dicomdir`` (the DICOMDIR, by pydicom's
FileSet), ``content`` (README.TXT, INDEX.HTM), ``export`` (which bytes go where),
``writers`` (folder, streamed zip, ISO 9660), ``medium`` (reading a folder, zip or ISO),
``import_media`` (a medium into the archive), ``identity`` (the patient-identity hook).
"""
