"""mkdocs hook: publish ``examples/*.py`` in the site, so that the links of
``docs/examples.md`` to ``../examples/NAME.py`` work there as they do on a code host."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

EXAMPLES = Path(__file__).resolve().parent / "examples"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add each example as a file that a page's link ``../examples/NAME.py`` resolves to."""
    for path in sorted(EXAMPLES.glob("*.py")):
        # The link resolves against docs/, hence the source URI outside it (whose leading
        # dot would exclude it, as a hidden file, unless included explicitly); the copy
        # lands beside the Examples page in the site.
        example = File.generated(
            config,
            f"../examples/{path.name}",
            abs_src_path=str(path),
            inclusion=InclusionLevel.INCLUDED,
        )
        example.dest_uri = f"examples/{path.name}"
        files.append(example)
    return files
