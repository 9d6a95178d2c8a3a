"""`python -m carehub.services.alerts`: run the alert worker."""

from .worker import main

if __name__ == "__main__":
    main()
