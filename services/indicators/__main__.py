"""`python -m carehub.services.indicators`: run the indicators service."""

from .worker import main

if __name__ == "__main__":
    main()
