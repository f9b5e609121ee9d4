from .cli import main
from .training.distributed import end_process

end_process(main())
