"""Policy documents that unit and integration tests share."""

# DESIGN.md's example: db accepts web's, green's api's and a range's connections on 5432.
DESIGN_EXAMPLE = {
    "name": "db-from-web",
    "network": "blue",
    "select": {"names": ["db", "db-*"]},
    "ingress": [
        {
            "from": [
                {"names": ["web*"]},
                {"network": "green", "names": ["api"]},
                {"cidr": "192.0.2.0/24"},
            ],
            "ports": [{"protocol": "tcp", "port": 5432}],
        }
    ],
}
