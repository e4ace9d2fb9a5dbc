import sys

from amzqa.cli import main

sys.exit(main())
