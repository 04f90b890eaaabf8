"""`python -m onnx_fe`: the command line."""

import sys

from .cli import main

sys.exit(main())
