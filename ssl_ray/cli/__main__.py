"""`python -m ssl_ray.cli ...`: the same as the `ssl-ray` console script."""
import sys

from . import main

sys.exit(main())
