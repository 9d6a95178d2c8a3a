"""`python -m services.gateway`: run the partner gateway."""

from services.gateway.worker import main

if __name__ == "__main__":
    main()
