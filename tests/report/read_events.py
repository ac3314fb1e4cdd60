#!/usr/bin/env python3
"""Independent reader of a TensorBoard event file (docs/file-formats.md, "TensorBoard event files").

Compiles proto/tensorboard_event.proto with protoc for python3-protobuf, checks every TFRecord frame's
length and masked CRC-32C with python3-crc32c, and prints one JSON line per event. Exit 1 on any bad frame.
Usage: read_events.py EVENT_FILE PROTO_DIR
"""
import importlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import crc32c


def masked(data):
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def main():
    path, proto_dir = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["protoc", "-I", proto_dir, "--python_out", out,
                        os.path.join(proto_dir, "tensorboard_event.proto")], check=True)
        sys.path.insert(0, out)
        pb = importlib.import_module("tensorboard_event_pb2")
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            if pos + 12 > len(data):
                sys.exit(f"truncated header at byte {pos}")
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
            if len_crc != masked(header):
                sys.exit(f"bad length CRC at byte {pos}")
            body = data[pos + 12:pos + 12 + length]
            if len(body) != length or pos + 16 + length > len(data):
                sys.exit(f"truncated record at byte {pos}")
            (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            if data_crc != masked(body):
                sys.exit(f"bad data CRC at byte {pos}")
            ev = pb.Event()
            ev.ParseFromString(body)
            rec = {"wall_time": ev.wall_time, "step": ev.step}
            if ev.HasField("file_version"):
                rec["file_version"] = ev.file_version
            if ev.HasField("summary"):
                rec["values"] = [[v.tag, v.simple_value] for v in ev.summary.value]
            print(json.dumps(rec))
            pos += 16 + length


if __name__ == "__main__":
    main()
