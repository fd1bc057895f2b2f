-- sipcaptool capture tables for PostgreSQL.
-- Generated from sipcaptool/record.py (python -m sipcaptool.store.schema --write).
--
-- "sip_capture" is a template: `sipcaptool db init` substitutes the configured
-- table name(s) for it (table and index names), and creates tables named with
-- strftime codes (sip_capture_%Y%m%d) for the day in UTC; writes create later
-- days on demand. msg is BYTEA: every message is kept byte for byte. date is
-- timestamp without time zone, in UTC. Unlike Kamailio's shipped PostgreSQL
-- schema, every column the module inserts is present (ruri_domain, from_domain,
-- to_domain, correlation_id, custom_field1..3).

-- One row per SIP message; columns in the order sipcaptool (and Kamailio) inserts them.
CREATE TABLE IF NOT EXISTS "sip_capture" (
  "id" BIGSERIAL NOT NULL,
  "date" TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT '1970-01-01 00:00:00',
  "micro_ts" BIGINT NOT NULL DEFAULT 0,
  "method" VARCHAR(50) NOT NULL DEFAULT '',
  "reply_reason" VARCHAR(255) NOT NULL DEFAULT '',
  "ruri" VARCHAR(4096) NOT NULL DEFAULT '',
  "ruri_user" VARCHAR(255) NOT NULL DEFAULT '',
  "from_user" VARCHAR(255) NOT NULL DEFAULT '',
  "from_tag" VARCHAR(255) NOT NULL DEFAULT '',
  "to_user" VARCHAR(255) NOT NULL DEFAULT '',
  "to_tag" VARCHAR(255) NOT NULL DEFAULT '',
  "pid_user" VARCHAR(255) NOT NULL DEFAULT '',
  "contact_user" VARCHAR(255) NOT NULL DEFAULT '',
  "auth_user" VARCHAR(255) NOT NULL DEFAULT '',
  "callid" VARCHAR(255) NOT NULL DEFAULT '',
  "callid_aleg" VARCHAR(255) NOT NULL DEFAULT '',
  "via_1" VARCHAR(4096) NOT NULL DEFAULT '',
  "via_1_branch" VARCHAR(255) NOT NULL DEFAULT '',
  "cseq" VARCHAR(255) NOT NULL DEFAULT '',
  "reason" VARCHAR(4096) NOT NULL DEFAULT '',
  "content_type" VARCHAR(4096) NOT NULL DEFAULT '',
  "auth" VARCHAR(4096) NOT NULL DEFAULT '',
  "user_agent" VARCHAR(4096) NOT NULL DEFAULT '',
  "source_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "source_port" INTEGER NOT NULL DEFAULT 0,
  "destination_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "destination_port" INTEGER NOT NULL DEFAULT 0,
  "contact_ip" VARCHAR(255) NOT NULL DEFAULT '',
  "contact_port" INTEGER NOT NULL DEFAULT 0,
  "originator_ip" VARCHAR(255) NOT NULL DEFAULT '',
  "originator_port" INTEGER NOT NULL DEFAULT 0,
  "proto" INTEGER NOT NULL DEFAULT 0,
  "family" INTEGER NOT NULL DEFAULT 0,
  "rtp_stat" VARCHAR(4096) NOT NULL DEFAULT '',
  "type" INTEGER NOT NULL DEFAULT 0,
  "node" VARCHAR(255) NOT NULL DEFAULT '',
  "correlation_id" VARCHAR(4096) NOT NULL DEFAULT '',
  "from_domain" VARCHAR(255) NOT NULL DEFAULT '',
  "to_domain" VARCHAR(255) NOT NULL DEFAULT '',
  "ruri_domain" VARCHAR(255) NOT NULL DEFAULT '',
  "diversion" VARCHAR(4096) NOT NULL DEFAULT '',
  "msg" BYTEA NOT NULL,
  "custom_field1" VARCHAR(4096) NOT NULL DEFAULT '',
  "custom_field2" VARCHAR(4096) NOT NULL DEFAULT '',
  "custom_field3" VARCHAR(4096) NOT NULL DEFAULT '',
  PRIMARY KEY ("id", "date")
);

CREATE INDEX IF NOT EXISTS "sip_capture_ruri_user_idx" ON "sip_capture" ("ruri_user");

CREATE INDEX IF NOT EXISTS "sip_capture_from_user_idx" ON "sip_capture" ("from_user");

CREATE INDEX IF NOT EXISTS "sip_capture_to_user_idx" ON "sip_capture" ("to_user");

CREATE INDEX IF NOT EXISTS "sip_capture_pid_user_idx" ON "sip_capture" ("pid_user");

CREATE INDEX IF NOT EXISTS "sip_capture_auth_user_idx" ON "sip_capture" ("auth_user");

CREATE INDEX IF NOT EXISTS "sip_capture_callid_aleg_idx" ON "sip_capture" ("callid_aleg");

CREATE INDEX IF NOT EXISTS "sip_capture_date_idx" ON "sip_capture" ("date");

CREATE INDEX IF NOT EXISTS "sip_capture_callid_idx" ON "sip_capture" ("callid");

-- HEP RTCP (type 5), reports (32, 99) and logs (100): fixed names, no strftime.

CREATE TABLE IF NOT EXISTS "logs_capture" (
  "id" BIGSERIAL NOT NULL,
  "date" TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT '1970-01-01 00:00:00',
  "micro_ts" BIGINT NOT NULL DEFAULT 0,
  "correlation_id" VARCHAR(4096) NOT NULL DEFAULT '',
  "source_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "source_port" INTEGER NOT NULL DEFAULT 0,
  "destination_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "destination_port" INTEGER NOT NULL DEFAULT 0,
  "proto" INTEGER NOT NULL DEFAULT 0,
  "family" INTEGER NOT NULL DEFAULT 0,
  "type" INTEGER NOT NULL DEFAULT 0,
  "node" VARCHAR(255) NOT NULL DEFAULT '',
  "msg" BYTEA NOT NULL,
  PRIMARY KEY ("id", "date")
);

CREATE INDEX IF NOT EXISTS "logs_capture_date_idx" ON "logs_capture" ("date");

CREATE INDEX IF NOT EXISTS "logs_capture_correlation_id_idx" ON "logs_capture" USING hash ("correlation_id");

CREATE TABLE IF NOT EXISTS "report_capture" (
  "id" BIGSERIAL NOT NULL,
  "date" TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT '1970-01-01 00:00:00',
  "micro_ts" BIGINT NOT NULL DEFAULT 0,
  "correlation_id" VARCHAR(4096) NOT NULL DEFAULT '',
  "source_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "source_port" INTEGER NOT NULL DEFAULT 0,
  "destination_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "destination_port" INTEGER NOT NULL DEFAULT 0,
  "proto" INTEGER NOT NULL DEFAULT 0,
  "family" INTEGER NOT NULL DEFAULT 0,
  "type" INTEGER NOT NULL DEFAULT 0,
  "node" VARCHAR(255) NOT NULL DEFAULT '',
  "msg" BYTEA NOT NULL,
  PRIMARY KEY ("id", "date")
);

CREATE INDEX IF NOT EXISTS "report_capture_date_idx" ON "report_capture" ("date");

CREATE INDEX IF NOT EXISTS "report_capture_correlation_id_idx" ON "report_capture" USING hash ("correlation_id");

CREATE TABLE IF NOT EXISTS "rtcp_capture" (
  "id" BIGSERIAL NOT NULL,
  "date" TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT '1970-01-01 00:00:00',
  "micro_ts" BIGINT NOT NULL DEFAULT 0,
  "correlation_id" VARCHAR(4096) NOT NULL DEFAULT '',
  "source_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "source_port" INTEGER NOT NULL DEFAULT 0,
  "destination_ip" VARCHAR(60) NOT NULL DEFAULT '',
  "destination_port" INTEGER NOT NULL DEFAULT 0,
  "proto" INTEGER NOT NULL DEFAULT 0,
  "family" INTEGER NOT NULL DEFAULT 0,
  "type" INTEGER NOT NULL DEFAULT 0,
  "node" VARCHAR(255) NOT NULL DEFAULT '',
  "msg" BYTEA NOT NULL,
  PRIMARY KEY ("id", "date")
);

CREATE INDEX IF NOT EXISTS "rtcp_capture_date_idx" ON "rtcp_capture" ("date");

CREATE INDEX IF NOT EXISTS "rtcp_capture_correlation_id_idx" ON "rtcp_capture" USING hash ("correlation_id");
