"""``python -m lcdata_train train ...``"""

import sys

from .cli import main

sys.exit(main())
