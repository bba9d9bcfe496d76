import sys

from deconvnet.cli import main

sys.exit(main())
