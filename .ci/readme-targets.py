"""Regenerate the README's targets table from the registry: python .ci/readme-targets.py"""
import re
from pathlib import Path

from edgeconv.cli.export import targets_markdown

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
new = re.sub(r"(<!-- targets:begin.*?-->\n).*?(<!-- targets:end -->)",
             lambda m: m.group(1) + targets_markdown() + "\n" + m.group(2), text, flags=re.S)
readme.write_text(new)
print("README targets table", "updated" if new != text else "already current")
