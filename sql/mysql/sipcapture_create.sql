-- sipcaptool capture tables for MySQL / MariaDB (InnoDB, utf8mb4, binary collation).
-- Generated from sipcaptool/record.py (python -m sipcaptool.store.schema --write).
--
-- `sip_capture` is a template: `sipcaptool db init` substitutes the configured
-- table name(s) for it, and creates tables named with strftime codes
-- (sip_capture_%Y%m%d) for the day in UTC; writes create later days on demand.
-- Text columns wider than 255 characters are TEXT so the row stays under
-- MySQL's 65,535-byte row limit with utf8mb4; msg is LONGBLOB: every message is
-- kept byte for byte (Kamailio's varchar(1500) lost long, non-UTF-8 and emoji
-- messages). date is DATETIME in UTC (no time-zone conversion by the server).
--
-- Optional date-range partitioning (db init --partition-days N), as in
-- Kamailio's Homer schema: appended to the sip_capture CREATE TABLE,
--   PARTITION BY RANGE (TO_DAYS(`date`)) (
--     PARTITION p_old VALUES LESS THAN (TO_DAYS('2026-01-01')),
--     PARTITION p20260101 VALUES LESS THAN (TO_DAYS('2026-01-02')),
--     ...one partition per day for N days from today...
--     PARTITION pmax VALUES LESS THAN MAXVALUE)
-- so old days are expired cheaply with ALTER TABLE ... DROP PARTITION p20260101.
-- That is why the primary key is (id, date): MySQL needs the partitioning column
-- in every unique key.

-- One row per SIP message; columns in the order sipcaptool (and Kamailio) inserts them.
CREATE TABLE IF NOT EXISTS `sip_capture` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `date` DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
  `micro_ts` BIGINT NOT NULL DEFAULT 0,
  `method` VARCHAR(50) NOT NULL DEFAULT '',
  `reply_reason` VARCHAR(255) NOT NULL DEFAULT '',
  `ruri` TEXT NOT NULL,
  `ruri_user` VARCHAR(255) NOT NULL DEFAULT '',
  `from_user` VARCHAR(255) NOT NULL DEFAULT '',
  `from_tag` VARCHAR(255) NOT NULL DEFAULT '',
  `to_user` VARCHAR(255) NOT NULL DEFAULT '',
  `to_tag` VARCHAR(255) NOT NULL DEFAULT '',
  `pid_user` VARCHAR(255) NOT NULL DEFAULT '',
  `contact_user` VARCHAR(255) NOT NULL DEFAULT '',
  `auth_user` VARCHAR(255) NOT NULL DEFAULT '',
  `callid` VARCHAR(255) NOT NULL DEFAULT '',
  `callid_aleg` VARCHAR(255) NOT NULL DEFAULT '',
  `via_1` TEXT NOT NULL,
  `via_1_branch` VARCHAR(255) NOT NULL DEFAULT '',
  `cseq` VARCHAR(255) NOT NULL DEFAULT '',
  `reason` TEXT NOT NULL,
  `content_type` TEXT NOT NULL,
  `auth` TEXT NOT NULL,
  `user_agent` TEXT NOT NULL,
  `source_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `source_port` INT NOT NULL DEFAULT 0,
  `destination_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `destination_port` INT NOT NULL DEFAULT 0,
  `contact_ip` VARCHAR(255) NOT NULL DEFAULT '',
  `contact_port` INT NOT NULL DEFAULT 0,
  `originator_ip` VARCHAR(255) NOT NULL DEFAULT '',
  `originator_port` INT NOT NULL DEFAULT 0,
  `proto` INT NOT NULL DEFAULT 0,
  `family` INT NOT NULL DEFAULT 0,
  `rtp_stat` TEXT NOT NULL,
  `type` INT NOT NULL DEFAULT 0,
  `node` VARCHAR(255) NOT NULL DEFAULT '',
  `correlation_id` TEXT NOT NULL,
  `from_domain` VARCHAR(255) NOT NULL DEFAULT '',
  `to_domain` VARCHAR(255) NOT NULL DEFAULT '',
  `ruri_domain` VARCHAR(255) NOT NULL DEFAULT '',
  `diversion` TEXT NOT NULL,
  `msg` LONGBLOB NOT NULL,
  `custom_field1` TEXT NOT NULL,
  `custom_field2` TEXT NOT NULL,
  `custom_field3` TEXT NOT NULL,
  PRIMARY KEY (`id`, `date`),
  KEY `ruri_user` (`ruri_user`),
  KEY `from_user` (`from_user`),
  KEY `to_user` (`to_user`),
  KEY `pid_user` (`pid_user`),
  KEY `auth_user` (`auth_user`),
  KEY `callid_aleg` (`callid_aleg`),
  KEY `date` (`date`),
  KEY `callid` (`callid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

-- HEP RTCP (type 5), reports (32, 99) and logs (100): fixed names, no strftime.

CREATE TABLE IF NOT EXISTS `logs_capture` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `date` DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
  `micro_ts` BIGINT NOT NULL DEFAULT 0,
  `correlation_id` TEXT NOT NULL,
  `source_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `source_port` INT NOT NULL DEFAULT 0,
  `destination_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `destination_port` INT NOT NULL DEFAULT 0,
  `proto` INT NOT NULL DEFAULT 0,
  `family` INT NOT NULL DEFAULT 0,
  `type` INT NOT NULL DEFAULT 0,
  `node` VARCHAR(255) NOT NULL DEFAULT '',
  `msg` LONGBLOB NOT NULL,
  PRIMARY KEY (`id`, `date`),
  KEY `date` (`date`),
  KEY `correlation_id` (`correlation_id`(255))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS `report_capture` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `date` DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
  `micro_ts` BIGINT NOT NULL DEFAULT 0,
  `correlation_id` TEXT NOT NULL,
  `source_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `source_port` INT NOT NULL DEFAULT 0,
  `destination_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `destination_port` INT NOT NULL DEFAULT 0,
  `proto` INT NOT NULL DEFAULT 0,
  `family` INT NOT NULL DEFAULT 0,
  `type` INT NOT NULL DEFAULT 0,
  `node` VARCHAR(255) NOT NULL DEFAULT '',
  `msg` LONGBLOB NOT NULL,
  PRIMARY KEY (`id`, `date`),
  KEY `date` (`date`),
  KEY `correlation_id` (`correlation_id`(255))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS `rtcp_capture` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `date` DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
  `micro_ts` BIGINT NOT NULL DEFAULT 0,
  `correlation_id` TEXT NOT NULL,
  `source_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `source_port` INT NOT NULL DEFAULT 0,
  `destination_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `destination_port` INT NOT NULL DEFAULT 0,
  `proto` INT NOT NULL DEFAULT 0,
  `family` INT NOT NULL DEFAULT 0,
  `type` INT NOT NULL DEFAULT 0,
  `node` VARCHAR(255) NOT NULL DEFAULT '',
  `msg` LONGBLOB NOT NULL,
  PRIMARY KEY (`id`, `date`),
  KEY `date` (`date`),
  KEY `correlation_id` (`correlation_id`(255))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
