"""Discovery: who is out there and are they alive (mDNS, peer table, liveness). Never moves images."""
