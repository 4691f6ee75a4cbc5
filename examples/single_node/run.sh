#!/usr/bin/env bash
# One node on loopback: store pydicom's CT_small.dcm with DCMTK, find it, get it back.
# Run from the repository root after README's install: bash examples/single_node/run.sh
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$work"' EXIT

"$py" -m node.cli run --data-dir "$work/data" --aet EXAMPLE --bind 127.0.0.1 \
    --dicom-port 11199 --http-port 18099 --no-mdns --allowed-aet GETSCU &
node=$!
until curl -sf http://127.0.0.1:18099/api/status >/dev/null; do sleep 0.2; done

ct=$("$py" -c "from pydicom.data import get_testdata_file as f; print(f('CT_small.dcm'))")
storescu -aec EXAMPLE 127.0.0.1 11199 "$ct"
echo "--- /api/status"; curl -s http://127.0.0.1:18099/api/status; echo
echo "--- C-FIND"
findscu -S -aec EXAMPLE -k QueryRetrieveLevel=STUDY -k PatientName='Compressed*' \
    -k StudyInstanceUID -k NumberOfStudyRelatedInstances 127.0.0.1 11199 2>&1 | grep -aE "PatientName|StudyInstanceUID|NumberOf"
echo "--- C-GET"
mkdir -p "$work/got"
getscu -S -aec EXAMPLE -od "$work/got" -k QueryRetrieveLevel=STUDY \
    -k StudyInstanceUID=1.3.6.1.4.1.5962.1.2.1.20040119072730.12322 127.0.0.1 11199
ls -l "$work/got"
