"""The node's stable id. Random for now; the mesh identity work makes it a certificate hash."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

NODE_ID_FILE = "node_id"


def load_or_create_node_id(data_dir: Path) -> str:
    path = data_dir / NODE_ID_FILE
    try:
        node_id = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{32}", node_id):
            return node_id
    except FileNotFoundError:
        pass
    node_id = secrets.token_hex(16)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id
