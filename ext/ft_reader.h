/* ft_reader.h: pcap / pcapng reader over an in-memory buffer (skeleton, being written). */
#ifndef FT_READER_H
#define FT_READER_H
#include <stddef.h>
#include "ft_record.h"
#endif
