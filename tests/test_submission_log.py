"""The submission log: rows appended without touching earlier ones, one row per sha256, a
malformed log refused with its file and line."""

import csv
import hashlib

import pytest

from deepauc.pipeline.submission_log import (
    LOG_COLUMNS,
    append_entry,
    file_sha256,
    read_log,
)


def entry(sha: str, submission: str = "submissions/demo.csv", **cells) -> dict:
    row = {c: "" for c in LOG_COLUMNS}
    row.update(
        time_utc="2026-12-03T10:00:00Z",
        submission=submission,
        sha256=sha,
        name="demo_ensemble",
        config="configs/demo/ensemble.yaml",
        method="rank",
        selection="fixed",
        members="preds/a+meta;preds/b+meta",
        weights="0.5;0.5",
        oof_auc="0.812345",
    )
    row.update(cells)
    return row


SHA_A, SHA_B = "a" * 64, "b" * 64


def test_file_sha256_is_hashlibs(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_bytes(b"image_name,target\nISIC_1,0.5\n")
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_append_keeps_earlier_rows_byte_for_byte(tmp_path):
    log = tmp_path / "sub" / "log.csv"
    added, message = append_entry(log, entry(SHA_A))
    assert added and "logged submissions/demo.csv" in message
    rows = list(csv.DictReader(log.open()))
    assert [r["sha256"] for r in rows] == [SHA_A] and rows[0]["lb_score"] == ""
    # the user fills in the leaderboard score by hand, with CRLF endings and a quoted cell
    edited = log.read_text().rstrip("\n").replace("\n", "\r\n") + "0.9412\r\n"
    log.write_bytes(edited.encode())
    added, _ = append_entry(log, entry(SHA_B, submission="sub, two.csv"))
    assert added
    text = log.read_bytes()
    assert text.startswith(edited.encode())
    rows = list(csv.DictReader(log.open(newline="")))
    assert [r["sha256"] for r in rows] == [SHA_A, SHA_B]
    assert rows[0]["lb_score"] == "0.9412" and rows[1]["submission"] == "sub, two.csv"


def test_same_submission_twice_changes_nothing_and_says_so(tmp_path):
    log = tmp_path / "log.csv"
    append_entry(log, entry(SHA_A))
    append_entry(log, entry(SHA_B))
    before = log.read_bytes()
    added, message = append_entry(log, entry(SHA_A, time_utc="2026-12-04T09:00:00Z"))
    assert not added
    assert "already logged at line 2" in message and str(log) in message
    assert log.read_bytes() == before


def test_log_without_trailing_newline_and_blank_lines(tmp_path):
    log = tmp_path / "log.csv"
    append_entry(log, entry(SHA_A))
    log.write_text(log.read_text() + "\n\n" + log.read_text().splitlines()[1].replace("a", "c"))
    # blank lines 3 and 4 are skipped, a copied row with another sha256 is a row (line 5)
    _, rows = read_log(log)
    assert [line for line, _ in rows] == [2, 5]
    append_entry(log, entry(SHA_B))
    assert [r["sha256"] for _, r in read_log(log)[1]][-1] == SHA_B


def write_log(path, *lines):
    path.write_text("\n".join([",".join(LOG_COLUMNS), *lines]) + "\n")


def good_line(sha=SHA_A, lb=""):
    return ",".join(entry(sha, lb_score=lb)[c] for c in LOG_COLUMNS)


@pytest.mark.parametrize(
    "lines, match",
    [
        ([good_line(), good_line(SHA_B) + ",extra"], r"line 3: 14 field\(s\), expected 13"),
        ([good_line(lb="n/a")], r"line 2: lb_score 'n/a' is not a number"),
        ([good_line(sha="abc")], r"line 2: sha256 'abc' is not 64 lowercase hex"),
        ([good_line().replace("2026-12-03T10:00:00Z", "yesterday")], "line 2: time_utc"),
    ],
)
def test_malformed_log_names_file_and_line(tmp_path, lines, match):
    log = tmp_path / "log.csv"
    write_log(log, *lines)
    before = log.read_bytes()
    with pytest.raises(ValueError, match=match) as err:
        append_entry(log, entry(SHA_B))
    assert str(err.value).startswith(f"{log}: line ") and "\n" not in str(err.value)
    assert log.read_bytes() == before


def test_wrong_header_is_line_one(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("time,file\n2026,x\n")
    with pytest.raises(ValueError, match=r"log.csv: line 1: the header must be time_utc,"):
        read_log(log)
    log.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_log(log)


def test_no_log_or_empty_log_holds_no_rows(tmp_path):
    assert read_log(tmp_path / "none.csv") == ("", [])
    (tmp_path / "empty.csv").write_text("")
    assert read_log(tmp_path / "empty.csv")[1] == []
    append_entry(tmp_path / "empty.csv", entry(SHA_A))
    assert (tmp_path / "empty.csv").read_text().splitlines()[0] == ",".join(LOG_COLUMNS)
