"""`python -m carehub.services.ingest`: run one ingest worker (same as `carehub ingest`)."""

from .worker import main

if __name__ == "__main__":
    main()
