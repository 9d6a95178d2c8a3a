"""`python -m services.timeline`: run the timeline worker."""

from services.timeline.worker import main

if __name__ == "__main__":
    main()
