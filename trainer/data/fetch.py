"""Make sure the default corpus is on this machine (used by `make demo`).

    python -m trainer.data.fetch            # find or download Jane Austen (r-cran-janeaustenr)

Lookup order: $OLH_AUSTEN -> installed Debian package -> ~/.cache/olharness -> `apt-get download`."""
import sys

from trainer.data.austen import find_austen, read_rdata_rdb
from trainer.errors import OLHError


def main() -> int:
    try:
        path = find_austen()
        books = read_rdata_rdb(path)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"corpus: {path} ({len(books)} novels, {sum(len(t) for t in books.values()):,} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
