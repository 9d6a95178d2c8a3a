"""`python -m carehub.services.identity`: run the identity worker (same as `carehub identity`)."""

from .worker import main

if __name__ == "__main__":
    main()
