# Optional: the control plane's state in an RDS PostgreSQL (HA mode), off by default.

resource "random_password" "db" {
  count   = var.enable_rds ? 1 : 0
  length  = 32
  special = false # it goes into a URL
}

resource "aws_db_subnet_group" "cumulus" {
  count      = var.enable_rds ? 1 : 0
  name       = "cumulus-${var.cluster_name}"
  subnet_ids = var.db_subnet_ids

  lifecycle {
    precondition {
      condition     = length(var.db_subnet_ids) >= 2
      error_message = "enable_rds needs db_subnet_ids in at least two availability zones."
    }
  }
}

resource "aws_security_group" "db" {
  count       = var.enable_rds ? 1 : 0
  name        = "cumulus-${var.cluster_name}-db"
  description = "Cumulus database: PostgreSQL from the control plane only"
  vpc_id      = data.aws_subnet.selected.vpc_id
  tags        = { Name = "cumulus-${var.cluster_name}-db" }
}

resource "aws_vpc_security_group_ingress_rule" "db_from_control_plane" {
  count                        = var.enable_rds ? 1 : 0
  security_group_id            = aws_security_group.db[0].id
  description                  = "PostgreSQL from the control plane"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.control_plane.id
}

resource "aws_db_instance" "cumulus" {
  count                     = var.enable_rds ? 1 : 0
  identifier                = "cumulus-${var.cluster_name}"
  engine                    = "postgres"
  engine_version            = var.db_engine_version
  instance_class            = var.db_instance_class
  allocated_storage         = var.db_allocated_storage_gb
  storage_type              = "gp3"
  storage_encrypted         = true
  db_name                   = "cumulus"
  username                  = "cumulus"
  password                  = random_password.db[0].result
  db_subnet_group_name      = aws_db_subnet_group.cumulus[0].name
  vpc_security_group_ids    = [aws_security_group.db[0].id]
  publicly_accessible       = false
  backup_retention_period   = 7
  skip_final_snapshot       = var.db_skip_final_snapshot
  final_snapshot_identifier = var.db_skip_final_snapshot ? null : "cumulus-${var.cluster_name}-final"
}

locals {
  # SQLAlchemy URL for psycopg 3, the driver Cumulus ships with; "" means SQLite on the instance.
  database_url = var.enable_rds ? "postgresql+psycopg://cumulus:${random_password.db[0].result}@${aws_db_instance.cumulus[0].endpoint}/cumulus" : ""
}
