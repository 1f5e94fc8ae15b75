#!/usr/bin/env python3
"""The longest functions of src/, in lines from `fn` to its closing brace, longest first.

Usage: .ci/function-lengths.py [COUNT]   (tests in `mod tests` are left out)
"""
import pathlib
import re
import sys

FN = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn (\w+)")


def functions(path):
    lines = path.read_text().splitlines()
    in_tests = None
    for number, line in enumerate(lines):
        if line.startswith("mod tests"):
            in_tests = number
        match = FN.match(line)
        if not match or in_tests is not None or line.rstrip().endswith(";"):
            continue
        indent = match.group(1)
        for end in range(number, len(lines)):
            if lines[end] == indent + "}" or (end == number and lines[end].rstrip().endswith("}")):
                yield end - number + 1, f"{path}:{number + 1}", match.group(7)
                break


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    found = [f for path in sorted(pathlib.Path("src").rglob("*.rs")) for f in functions(path)]
    for lines, where, name in sorted(found, reverse=True)[:count]:
        print(f"{lines:4}  {name:32} {where}")


if __name__ == "__main__":
    main()
