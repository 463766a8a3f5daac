{#- The rabbitmq role: Debian's rabbitmq-server with its config and Erlang cookie
    in place before the broker first starts, then the site's vhosts and users
    (passwords generated into Vault), without RabbitMQ's default user. #}
include:
  - rabbitmq.config
  - rabbitmq.package
  - rabbitmq.service
  - rabbitmq.access
  - rabbitmq.backup
