"""`python -m carehub.services.reviews`: run a reviews worker."""

from .worker import main

if __name__ == "__main__":
    main()
