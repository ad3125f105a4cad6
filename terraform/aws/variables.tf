# Where and what ------------------------------------------------------------------------------------

variable "region" {
  type        = string
  description = "AWS region of the control plane and of the nodes it creates, e.g. eu-west-1."
}

variable "cluster_name" {
  type        = string
  description = "Cluster name: nodes are tagged cumulus:cluster=<name>, and the IAM policy only lets the control plane launch, tag and terminate instances carrying that tag."
  default     = "cumulus"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,31}$", var.cluster_name))
    error_message = "cluster_name must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit."
  }
}

variable "subnet_id" {
  type        = string
  description = "Subnet of the control plane and of its nodes. The control plane needs outbound internet (apt, PyPI) and, to be reached from outside, a public IP (see associate_public_ip)."
}

variable "associate_public_ip" {
  type        = bool
  description = "Give the control plane a public IPv4 address (the API URL output uses it when present)."
  default     = true
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the control plane."
  default     = "t3.small"
}

variable "root_volume_gb" {
  type        = number
  description = "Size of the control plane's root volume (GiB): Docker, the runtime image and the SQLite database live there."
  default     = 20
}

variable "key_name" {
  type        = string
  description = "EC2 key pair for SSH to the control plane (user `admin` on Debian); null for none."
  default     = null
}

# Network access ------------------------------------------------------------------------------------

variable "api_port" {
  type        = number
  description = "TCP port of the Cumulus API on the control plane."
  default     = 8080

  validation {
    condition     = var.api_port >= 1 && var.api_port <= 65535 && var.api_port != 22
    error_message = "api_port must be a TCP port other than 22."
  }
}

variable "api_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to reach the API port (clients). Nodes of the cluster are always allowed, through their security group."
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to reach SSH (port 22) on the control plane; empty opens no SSH at all."
  default     = []
}

variable "agent_port" {
  type        = number
  description = "TCP port of the node agent on every node (opened to the control plane only). Cumulus' default is 8081."
  default     = 8081
}

variable "control_plane_url" {
  type        = string
  description = "URL the nodes reach the control plane at (its public_url), e.g. behind a DNS name; empty: http://<private IPv4>:<api_port>, read from the instance metadata at boot."
  default     = ""
}

# Installing Cumulus --------------------------------------------------------------------------------

variable "cumulus_source" {
  type        = string
  description = "What `pip install` installs Cumulus from: a release wheel URL (https://.../cumulus-0.1.0-py3-none-any.whl) or a git URL (git+https://host/org/cumulus.git@v0.1.0)."

  validation {
    condition     = length(regexall("[\\s'\"]", var.cumulus_source)) == 0 && length(var.cumulus_source) > 0
    error_message = "cumulus_source must be one URL without spaces or quotes."
  }
}

variable "pip_extra_args" {
  type        = list(string)
  description = "Extra arguments of `pip install`, e.g. [\"--index-url\", \"https://pypi.example.com/simple\"] for a private mirror."
  default     = []
}

variable "apt_packages" {
  type        = list(string)
  description = "Debian packages the control plane needs; only missing ones are installed. docker.io runs the engine the control plane checks on start, mmdebstrap builds the function runtime images, iptables and busybox-static let its local node enforce functions' egress rules and start image functions, git is needed for a git+ cumulus_source."
  default     = ["ca-certificates", "python3-venv", "docker.io", "mmdebstrap", "iptables", "busybox-static", "git"]
}

# The fleet -----------------------------------------------------------------------------------------

variable "node_types" {
  type = list(object({
    name          = string
    instance_type = string
    cpu_millis    = number
    memory_mib    = number
    hourly_cost   = optional(number, 0)
    boot_s        = optional(number, 90)
  }))
  description = "Node types the autoscaler may create: Cumulus' name, the EC2 instance type, and the capacity it offers to functions (cpu_millis, memory_mib)."
  default = [{
    name          = "small"
    instance_type = "t3.small"
    cpu_millis    = 2000
    memory_mib    = 1536
    hourly_cost   = 0.0208
    boot_s        = 90
  }]

  validation {
    condition     = length(var.node_types) > 0 && length(distinct([for t in var.node_types : t.name])) == length(var.node_types)
    error_message = "node_types must list at least one node type, with distinct names."
  }
}

variable "min_nodes" {
  type        = number
  description = "Fewest nodes the fleet keeps."
  default     = 0
}

variable "max_nodes" {
  type        = number
  description = "Most nodes the fleet grows to."
  default     = 4
}

variable "node_image_id" {
  type        = string
  description = "AMI of the nodes (a Debian 12 image); null uses the same Debian 12 AMI as the control plane."
  default     = null
}

variable "node_key_name" {
  type        = string
  description = "EC2 key pair installed on nodes (for debugging); null for none."
  default     = null
}

# State ---------------------------------------------------------------------------------------------

variable "enable_rds" {
  type        = bool
  description = "Keep the control plane's state in an RDS PostgreSQL (HA mode) instead of SQLite on the instance."
  default     = false
}

variable "db_subnet_ids" {
  type        = list(string)
  description = "Subnets of the RDS database, in at least two availability zones (only with enable_rds)."
  default     = []
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class (only with enable_rds)."
  default     = "db.t4g.micro"
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "RDS storage in GiB (only with enable_rds)."
  default     = 20
}

variable "db_engine_version" {
  type        = string
  description = "PostgreSQL major version of the RDS database (only with enable_rds)."
  default     = "16"
}

variable "db_skip_final_snapshot" {
  type        = bool
  description = "Destroy the RDS database without a final snapshot (only with enable_rds)."
  default     = false
}

# Operations ----------------------------------------------------------------------------------------

variable "admin_token_in_ssm" {
  type        = bool
  description = "Publish the admin token as the SecureString SSM parameter /cumulus/<cluster_name>/admin-token (the instance gets ssm:PutParameter on that one parameter only)."
  default     = true
}

variable "terminate_nodes_on_destroy" {
  type        = bool
  description = "On `terraform destroy`, terminate every instance tagged cumulus:cluster=<cluster_name> (runs the aws CLI on the machine running terraform)."
  default     = true
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource this module creates, and on the nodes the control plane creates."
  default     = {}

  validation {
    condition     = length([for k in keys(var.tags) : k if startswith(k, "cumulus:")]) == 0
    error_message = "tags must not use the cumulus: prefix: Cumulus sets those itself."
  }
}
