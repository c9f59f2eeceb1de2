# Builds and installs the C library: shared library with a versioned SONAME,
# static library, header and pkg-config file.
#
#   make                      # cargo build --release
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make uninstall PREFIX=/usr/local

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGDIR     ?= $(LIBDIR)/pkgconfig
CARGO      ?= cargo
TARGET_DIR ?= target

NAME    := decnet_agent_client
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
SONAME  := lib$(NAME).so.$(MAJOR)
BUILT   := $(TARGET_DIR)/release

.PHONY: all install uninstall

all:
	$(CARGO) build --release --lib --target-dir $(TARGET_DIR)

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGDIR)
	install -m 0755 $(BUILT)/lib$(NAME).so $(DESTDIR)$(LIBDIR)/lib$(NAME).so.$(VERSION)
	ln -sf lib$(NAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/lib$(NAME).so
	install -m 0644 $(BUILT)/lib$(NAME).a $(DESTDIR)$(LIBDIR)/lib$(NAME).a
	install -m 0644 include/$(NAME).h $(DESTDIR)$(INCLUDEDIR)/$(NAME).h
	printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: $(NAME)' \
	  'Description: mTLS client, PKI and C ABI for DECNET honeypot worker agents' \
	  'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -l$(NAME)' \
	  'Libs.private: -lpthread -ldl -lm' \
	  'Cflags: -I$${includedir}' \
	  > $(DESTDIR)$(PKGDIR)/$(NAME).pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/lib$(NAME).so* $(DESTDIR)$(LIBDIR)/lib$(NAME).a \
	      $(DESTDIR)$(INCLUDEDIR)/$(NAME).h $(DESTDIR)$(PKGDIR)/$(NAME).pc
