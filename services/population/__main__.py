"""`python -m carehub.services.population`: run the population (risk) worker."""

from .worker import main

if __name__ == "__main__":
    main()
