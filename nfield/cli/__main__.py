import sys

from nfield.cli import main

sys.exit(main())
