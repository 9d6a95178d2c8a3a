"""`python -m carehub.services.fhir`: run the FHIR R4 endpoint (same as `carehub fhir`)."""

from .worker import main

if __name__ == "__main__":
    main()
