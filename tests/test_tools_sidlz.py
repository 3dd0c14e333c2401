"""compress / decompress: the .sidlz layout as documented, round trips, another preset refused."""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zlib

import pytest

from tools_helpers import GMD, POP, drum_grid, hit_f1, notes_of, records, sidl


def parse_documented(data: bytes) -> dict:
    """The version-1 layout exactly as realtime/tools/sidlz.py's docstring writes it down."""
    assert data[:5] == b"SIDLZ"
    version, flags, n = data[5], data[6], data[7]
    name = data[8:8 + n].decode()
    fingerprint = data[8 + n:24 + n]
    body = zlib.decompress(data[24 + n:])
    tpb, channel, positions, scale = struct.unpack_from("<HBIf", body, 0)
    at = 11
    (nt,) = struct.unpack_from("<H", body, at); at += 2
    tempos = [struct.unpack_from("<II", body, at + 8 * i) for i in range(nt)]; at += 8 * nt
    (nm,) = struct.unpack_from("<H", body, at); at += 2
    meters = [struct.unpack_from("<IBB", body, at + 6 * i) for i in range(nm)]; at += 6 * nm
    (ne,) = struct.unpack_from("<I", body, at); at += 4
    def varints(at):
        """``ne`` variable-length numbers (LEB128: low 7 bits first) from ``at``, written here from
        the documented layout, not from the module under test."""
        out = []
        for _ in range(ne):
            v = shift = 0
            while True:
                b = body[at]; at += 1
                v |= (b & 0x7F) << shift; shift += 7
                if not b & 0x80:
                    break
            out.append(v)
        return out, at
    gaps, at = varints(at)
    atoms, at = varints(at)
    values = struct.unpack_from(f"<{ne}b", body, at); at += ne
    assert at == len(body)
    return dict(version=version, flags=flags, name=name, fingerprint=fingerprint, tpb=tpb, channel=channel,
                positions=positions, scale=scale, tempos=tempos, meters=meters, gaps=gaps, atoms=atoms, values=values)


def test_compress_writes_the_documented_format_and_round_trips(tmp_path):
    z = tmp_path / "g.sidlz"
    code, lines, err = sidl("compress", GMD, "-o", z, "--json")
    assert code == 0, err
    (r,) = records(lines)
    data = z.read_bytes()
    f = parse_documented(data)
    manifest = json.loads((__import__("sidl.realtime.preset.store", fromlist=["x"]).shipped_preset_dir()
                           / "drums-gmd" / "preset.json").read_text())
    files = "\n".join(f"{k} {v['sha256']}" for k, v in sorted(manifest["files"].items()))
    assert f["version"] == 1 and f["flags"] == 0 and f["name"] == "drums-gmd" and f["channel"] == 9
    assert f["fingerprint"] == hashlib.sha256(f"drums-gmd\n{files}".encode()).digest()[:16]
    assert f["tpb"] == 480 and f["meters"] == [(0, 4, 4)] and f["tempos"][0][1] == 434783   # 138 BPM
    n_atoms = manifest["atoms"]["count"]       # drum-feel entries: atoms at 32 x 16 feel levels
    assert len(f["atoms"]) == r["entries"] and max(f["atoms"]) < n_atoms * 512 and sum(f["gaps"]) < f["positions"]
    assert max(f["atoms"]) >= n_atoms                                   # the levels are in the file
    raw = GMD.read_bytes()
    bars = r["bars"]
    assert r["sidlz_bytes"] == len(data) and r["midi_bytes"] == len(raw)
    assert r["bits_per_bar"] == pytest.approx(8 * len(data) / bars, abs=0.1)
    assert r["gzip_bits_per_bar"] == pytest.approx(8 * len(gzip.compress(raw, 9, mtime=0)) / bars, abs=0.1)
    assert r["bits_per_bar"] < r["gzip_bits_per_bar"] / 3
    out = tmp_path / "back.mid"
    code, lines, err = sidl("decompress", z, "-o", out, "--json")
    assert code == 0, err
    ref, got = notes_of(GMD, {9}), notes_of(out, {9})
    n = int(max(b for b, *_ in ref + got) * 4) + 8
    f1 = hit_f1(drum_grid(ref, n), drum_grid(got, n))[0]
    assert f1 == pytest.approx(r["f1"], abs=1e-4) and f1 > 0.95


def test_decompress_refuses_another_preset_and_damaged_files(tmp_path):
    z = tmp_path / "p.sidlz"
    assert sidl("compress", POP, "-o", z)[0] == 0
    code, _, err = sidl("decompress", z, "-p", "drums-gmd", "-o", tmp_path / "x.mid")
    assert code == 1 and "made with preset 'piano-pop909'" in err and not (tmp_path / "x.mid").exists()
    data = bytearray(z.read_bytes())
    (tmp_path / "cut.sidlz").write_bytes(bytes(data[:40]))
    data[6 + 2 + len("piano-pop909")] ^= 0xFF                  # one byte of the fingerprint
    (tmp_path / "other.sidlz").write_bytes(bytes(data))
    code, _, err = sidl("decompress", tmp_path / "other.sidlz", "-o", tmp_path / "y.mid")
    assert code == 1 and "another version of it" in err
    code, _, err = sidl("decompress", tmp_path / "cut.sidlz", "-o", tmp_path / "z.mid")
    assert code == 1 and "damaged .sidlz" in err and "Traceback" not in err
    (tmp_path / "v9.sidlz").write_bytes(b"SIDLZ\x09" + bytes(data[6:]))
    code, _, err = sidl("decompress", tmp_path / "v9.sidlz", "-p", "piano-pop909", "-o", tmp_path / "w.mid")
    assert code == 1 and "version 9" in err
