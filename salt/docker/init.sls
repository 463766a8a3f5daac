{#- Docker Engine on a guest whose roles run containers (`nesting: true` in the
    role catalog): the roles' states include it (mailcow, gitlab_runner), it is
    not a role of its own. Docker's apt repository (pinned) or Debian's docker.io,
    daemon.json checked before it replaces the running one, the service enabled.
    docs/docker.md. #}
include:
  - docker.guest
  - docker.package
  - docker.config
  - docker.service
