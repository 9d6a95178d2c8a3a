"""`python -m carehub.services.mllp`: run the HL7 v2 MLLP listener (same as `carehub mllp`)."""

from .worker import main

if __name__ == "__main__":
    main()
