"""`python -m onnx_fe.cli` and `python -m onnx_fe`: the command line."""

import sys

from . import main

sys.exit(main())
