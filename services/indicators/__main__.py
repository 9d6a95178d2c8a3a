"""`python -m services.indicators`: run the indicators service."""

from services.indicators.worker import main

if __name__ == "__main__":
    main()
