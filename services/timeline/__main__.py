"""`python -m carehub.services.timeline`: run the timeline worker."""

from .worker import main

if __name__ == "__main__":
    main()
