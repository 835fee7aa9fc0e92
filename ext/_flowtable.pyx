"""Flow table (skeleton)."""
from ft_record cimport *
