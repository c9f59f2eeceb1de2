# Builds and installs the C library -- shared library with a versioned
# SONAME, static library, header, pkg-config file and CMake package
# (find_package(decnet_agent_client CONFIG)) -- and the command-line tool
# with its shell completions (bash, zsh, fish) and man pages (one per
# subcommand too), all generated from its clap definition.
#
#   make                      # release builds of the library and the CLI
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make install-lib          # the C library only (install-cli: the CLI only)
#   make uninstall PREFIX=/usr/local

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
BASHDIR    ?= $(DATADIR)/bash-completion/completions
ZSHDIR     ?= $(DATADIR)/zsh/site-functions
FISHDIR    ?= $(DATADIR)/fish/vendor_completions.d
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGDIR     ?= $(LIBDIR)/pkgconfig
CMAKEDIR   ?= $(LIBDIR)/cmake/decnet_agent_client
STRIP      ?= strip
CARGO      ?= cargo
TARGET_DIR ?= target

NAME    := decnet_agent_client
CLI     := decnet-agent-client
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
SONAME  := lib$(NAME).so.$(MAJOR)
BUILT   := $(TARGET_DIR)/release
SIZEOF_VOID_P := $(shell echo $$(( $$(getconf LONG_BIT) / 8 )))
# Fills the @...@ of the CMake templates in cmake/.
CONFIGURE = sed -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	-e 's|@NAME@|$(NAME)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@SONAME@|$(SONAME)|g' \
	-e 's|@SIZEOF_VOID_P@|$(SIZEOF_VOID_P)|g'

.PHONY: all lib cli install install-lib install-cli uninstall

all: lib cli

# Only the C crate types: built together with the rlib (`cargo build`), the
# shared library comes out larger (3.14 MB against 2.87 MB stripped) and
# the archive much larger (50 MB against 18 MB).
lib:
	$(CARGO) rustc --release --lib --crate-type cdylib,staticlib --target-dir $(TARGET_DIR)

# The CLI without the test kit: no stand-in worker in what users install.
cli:
	$(CARGO) build --release --features cli --bin $(CLI) --target-dir $(TARGET_DIR)

install: install-lib install-cli

install-lib: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGDIR) $(DESTDIR)$(CMAKEDIR)
	install -m 0755 $(BUILT)/lib$(NAME).so $(DESTDIR)$(LIBDIR)/lib$(NAME).so.$(VERSION)
	ln -sf lib$(NAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/lib$(NAME).so
	install -m 0644 $(BUILT)/lib$(NAME).a $(DESTDIR)$(LIBDIR)/lib$(NAME).a
	# The archive keeps the symbols a link needs, but not the standard library's debug info.
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/lib$(NAME).a
	install -m 0644 include/$(NAME).h $(DESTDIR)$(INCLUDEDIR)/$(NAME).h
	# The header-only C++17 wrapper and its pkg-config entry (it adds the standard, nothing else).
	install -m 0644 include/$(NAME).hpp $(DESTDIR)$(INCLUDEDIR)/$(NAME).hpp
	printf '%s\n' \
	  'Name: $(NAME)_cxx' \
	  'Description: header-only C++17 API over decnet_agent_client' \
	  'Version: $(VERSION)' \
	  'Requires: $(NAME) = $(VERSION)' \
	  'Cflags: -std=c++17' \
	  > $(DESTDIR)$(PKGDIR)/$(NAME)_cxx.pc
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
	$(CONFIGURE) cmake/$(NAME)-config.cmake.in > $(DESTDIR)$(CMAKEDIR)/$(NAME)-config.cmake
	$(CONFIGURE) cmake/$(NAME)-config-version.cmake.in > $(DESTDIR)$(CMAKEDIR)/$(NAME)-config-version.cmake

install-cli: cli
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHDIR) \
	           $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR)
	install -m 0755 $(BUILT)/$(CLI) $(DESTDIR)$(BINDIR)/$(CLI)
	# The main page and one per subcommand, every page its SUBCOMMANDS section names.
	$(BUILT)/$(CLI) manpage --dir $(DESTDIR)$(MANDIR)/man1
	$(BUILT)/$(CLI) completions bash > $(DESTDIR)$(BASHDIR)/$(CLI)
	$(BUILT)/$(CLI) completions zsh > $(DESTDIR)$(ZSHDIR)/_$(CLI)
	$(BUILT)/$(CLI) completions fish > $(DESTDIR)$(FISHDIR)/$(CLI).fish
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/$(CLI).1 $(DESTDIR)$(MANDIR)/man1/$(CLI)-*.1 $(DESTDIR)$(BASHDIR)/$(CLI) \
	           $(DESTDIR)$(ZSHDIR)/_$(CLI) $(DESTDIR)$(FISHDIR)/$(CLI).fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/$(CLI) $(DESTDIR)$(MANDIR)/man1/$(CLI).1 $(DESTDIR)$(MANDIR)/man1/$(CLI)-*.1 \
	      $(DESTDIR)$(BASHDIR)/$(CLI) \
	      $(DESTDIR)$(ZSHDIR)/_$(CLI) $(DESTDIR)$(FISHDIR)/$(CLI).fish
	rm -f $(DESTDIR)$(LIBDIR)/lib$(NAME).so* $(DESTDIR)$(LIBDIR)/lib$(NAME).a \
	      $(DESTDIR)$(INCLUDEDIR)/$(NAME).h $(DESTDIR)$(PKGDIR)/$(NAME).pc \
	      $(DESTDIR)$(INCLUDEDIR)/$(NAME).hpp $(DESTDIR)$(PKGDIR)/$(NAME)_cxx.pc \
	      $(DESTDIR)$(CMAKEDIR)/$(NAME)-config.cmake $(DESTDIR)$(CMAKEDIR)/$(NAME)-config-version.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR)
