"""`python -m carehub.services.caselists`: run the case-list service."""

from .worker import main

if __name__ == "__main__":
    main()
