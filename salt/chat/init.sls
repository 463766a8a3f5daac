{#- The chat role: a Go service (by default the repository's example chat,
    apps/chat) built from a pinned source with a pinned toolchain into a
    versioned release, run by systemd under its own user with its database
    and broker credentials from Vault; a release that fails its health check
    is rolled back (docs/chat.md). #}
include:
  - chat.user
  - chat.toolchain
  - chat.config
  - chat.release
  - chat.service
