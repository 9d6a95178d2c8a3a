"""`python -m services.identity`: run the identity worker (same as `carehub identity`)."""

from services.identity.worker import main

if __name__ == "__main__":
    main()
