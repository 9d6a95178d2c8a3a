"""`python -m services.alerts`: run the alert worker."""

from services.alerts.worker import main

if __name__ == "__main__":
    main()
