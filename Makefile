# pgsink: PGXS build of a C++17 PostgreSQL extension.
EXTENSION = pgsink
MODULE_big = pgsink
DATA = $(wildcard sql/pgsink--*.sql)
PGFILEDESC = "pgsink - change capture to sinks"

SRCS = $(wildcard src/*/*.cpp)
OBJS = $(SRCS:.cpp=.o)

# pg_regress: one file per feature, run against a temporary instance whose
# configuration preloads pgsink and sets wal_level = logical.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/pgsink--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/conf/regress.conf \
               --load-extension=pgsink
NO_INSTALLCHECK =

PG_CONFIG ?= pg_config

# Warnings are errors. PostgreSQL's headers are C and trip a few C++-only
# warnings, which are switched off by name rather than globally.
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-register -Isrc
PG_CPPFLAGS = -Isrc
SHLIB_LINK = -lstdc++ -lavro -lcurl -lcrypto -lz

# Debian builds PostgreSQL with LLVM: PGXS would then try to compile every
# object to bitcode with clang, without our C++ flags. pgsink has no
# expression-evaluation code worth inlining into JIT-compiled queries, so
# bitcode is disabled outright.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on every header: the tree is small and this is never wrong.
HEADERS = $(wildcard src/*/*.h)
$(OBJS): $(HEADERS)

.PHONY: format
format:
	clang-format -i $(SRCS) $(HEADERS)
