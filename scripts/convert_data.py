r"""Convert problem files you already have into the JSON lines that train.py and evaluate.py read with
--data_jsonl: {"problem", "answer", "solution", "family", "level"}. Nothing is downloaded.

    python scripts/convert_data.py --format gsm8k tests/data/gsm8k_sample.jsonl --out out/gsm8k.jsonl
    python scripts/convert_data.py --format math tests/data/math_sample.jsonl --out out/math.jsonl
    python scripts/convert_data.py --format math MATH/train --out out/math.jsonl   # a directory of .json files

gsm8k  lines {"question", "answer"}: the final answer is what follows the last "####" (thousands commas
       removed); the text before it becomes the solution, with the <<...>> calculator annotations removed
       and "\boxed{ANSWER}" appended as its last line (verify.py, our checker, reads the last \boxed{}).
math   Hendrycks MATH records {"problem", "solution"[, "level": "Level 3", "type": "Algebra"]}, as JSON
       lines or as a directory (searched recursively) of .json files holding one record each: the answer
       is the content of the solution's last \boxed{...} or \fbox{...}, braces balanced (what
       verify.extract_answer reads); "Level N" becomes level N (0 if absent or "Level ?"); the type becomes
       the family, in lower case with _ for other characters ("Counting & Probability" ->
       counting_probability). The solution is kept as it is.

A record that cannot be converted (invalid JSON, a missing or empty field, no "####", no box or an
unclosed one) is skipped and counted, and named by file:line (the first 10); with --strict the first one
is a one-line error instead (exit code 2), as is an unreadable input. Prints how many records were read,
written and skipped, and how many written problems fall in each split by their canonical key (train.py
trains on the train split's; evaluate.py --data_jsonl evaluates on the test or validation split's).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tasks  # noqa: E402
from verify import extract_answer  # noqa: E402

BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")  # as verify.py's box pattern
ANNOTATION = re.compile(r"<<.*?>>")                 # GSM8K calculator annotations: 48/2 = <<48/2=24>>24
THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
MAX_SHOWN = 10  # skipped records named one by one


class Bad(ValueError):
    """A record that cannot be converted."""


class Fatal(Exception):
    """An unreadable input (or, with --strict, a bad record): one line on stderr, exit code 2."""


def _text(obj: dict, key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise Bad(f"'{key}' missing or not a non-empty string")
    return v


def from_gsm8k(obj: dict) -> dict:
    question, answer = _text(obj, "question"), _text(obj, "answer")
    if "####" not in answer:
        raise Bad("no '####' before the final answer")
    body, final = answer.rsplit("####", 1)
    final = final.strip()
    if THOUSANDS.fullmatch(final):
        final = final.replace(",", "")
    if not final:
        raise Bad("nothing after '####'")
    body = "\n".join(line.rstrip() for line in ANNOTATION.sub("", body).strip().splitlines())
    solution = (body + "\n" if body else "") + f"\\boxed{{{final}}}"
    if extract_answer(solution) != final:
        raise Bad(f"the final answer {final!r} does not read back from \\boxed{{}}")
    return {"problem": question.strip(), "answer": final, "solution": solution, "family": "gsm8k", "level": 0}


def from_math(obj: dict) -> dict:
    problem, solution = _text(obj, "problem"), _text(obj, "solution")
    if not BOX.search(solution):
        raise Bad("no \\boxed{} or \\fbox{} in the solution")
    answer = extract_answer(solution)
    if answer is None:
        raise Bad("the solution's last box is empty or has no closing brace")
    level = obj.get("level", 0)
    if not isinstance(level, int) or isinstance(level, bool):
        m = re.fullmatch(r"\s*Level\s+(\d+)\s*", str(level))
        level = int(m.group(1)) if m else 0
    family = re.sub(r"[^a-z0-9]+", "_", str(obj.get("type") or "math").lower()).strip("_") or "math"
    return {"problem": problem.strip(), "answer": answer, "solution": solution, "family": family, "level": level}


def _lines(path: str):
    """(file:line, text) of each non-blank line of a text file."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield f"{path}:{n}", line
    except UnicodeDecodeError:
        raise Fatal(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise Fatal(f"{path}: cannot read ({e.strerror})") from None


def records(path: str, fmt: str):
    """(where, JSON text) of each record: the lines of a file, or for --format math the .json files of
    a directory (one record each)."""
    if os.path.isdir(path):
        if fmt != "math":
            raise Fatal(f"{path}: is a directory; --format {fmt} reads one JSON lines file")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".json"))
        if not files:
            raise Fatal(f"{path}: no .json files in this directory")
        for fp in files:
            try:
                with open(fp, encoding="utf-8") as f:
                    yield fp, f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise Fatal(f"{fp}: cannot read ({getattr(e, 'strerror', None) or 'not UTF-8 text'})") from None
    elif not os.path.exists(path):
        raise Fatal(f"{path}: no such file or directory")
    else:
        yield from _lines(path)


def convert(path: str, fmt: str, strict: bool = False) -> tuple[list[dict], list[str], int]:
    """The converted records, the skipped ones ('where: why') and the number read."""
    out, skipped, n = [], [], 0
    to_ours = {"gsm8k": from_gsm8k, "math": from_math}[fmt]
    for where, text in records(path, fmt):
        n += 1
        try:
            try:
                obj = tasks.json_object(text)
            except ValueError as e:
                raise Bad(str(e)) from None
            out.append(to_ours(obj))
        except Bad as e:
            if strict:
                raise Fatal(f"{where}: {e} (--strict)") from None
            skipped.append(f"{where}: {e}")
    return out, skipped, n


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def main(argv=None) -> int:
    p = _Parser(prog="convert_data.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("input", help="a JSON lines file (gsm8k, math) or a directory of .json files (math)")
    p.add_argument("--format", required=True, choices=("gsm8k", "math"), help="the input's format")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="where to write our JSON lines")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record (one-line error, exit 2)")
    args = p.parse_args(argv)
    try:
        if os.path.abspath(args.out) == os.path.abspath(args.input):
            raise Fatal(f"--out {args.out} is the input file")
        if os.path.isdir(args.out):
            raise Fatal(f"--out {args.out} is a directory: give the file to write")
        rows, skipped, n = convert(args.input, args.format, args.strict)
        if not rows:
            raise Fatal(f"{args.input}: none of its {n} records could be converted"
                        + (f" (first: {skipped[0]})" if skipped else ""))
        from runs import write_text  # atomically: a temporary file beside it, renamed into place (removed on failure)
        write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    except (Fatal, OSError) as e:
        sys.stderr.write(f"convert_data.py: error: {e}\n")
        return 2
    splits = [tasks.split_of(tasks.outside_key(r["problem"], r["answer"])) for r in rows]
    print(f"convert_data.py: read {n} {args.format} records from {args.input}, wrote {len(rows)} to {args.out}, "
          f"skipped {len(skipped)}")
    for s in skipped[:MAX_SHOWN]:
        print(f"  skipped {s}")
    if len(skipped) > MAX_SHOWN:
        print(f"  ... and {len(skipped) - MAX_SHOWN} more")
    print("  by canonical key: " + ", ".join(f"{s} {splits.count(s)}" for s in tasks.SPLITS)
          + " (train.py trains on train; evaluate.py --data_jsonl reads test or validation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
