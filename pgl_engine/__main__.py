from .cli import main
from .distributed import end_process

end_process(main())
