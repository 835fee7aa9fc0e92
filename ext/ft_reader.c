#include "ft_reader.h"
#include "ft_parse.h"
