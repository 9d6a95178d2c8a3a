"""`python -m carehub.services.gateway`: run the partner gateway."""

from .worker import main

if __name__ == "__main__":
    main()
