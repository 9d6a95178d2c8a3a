"""`python -m services.ingest`: run one ingest worker (same as `carehub ingest`)."""

from services.ingest.worker import main

if __name__ == "__main__":
    main()
