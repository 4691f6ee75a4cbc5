"""The dashboard at /dashboard: the mesh, replication, studies, audit and alerts of the
whole mesh as one node sees them (pages.py), served with its own script and style."""
