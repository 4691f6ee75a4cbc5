"""Discovery: who is out there and are they alive (mDNS, peers, liveness). Never moves images."""
