-- One index for both lookups by person: the duplicate check (campaign and person key) and the
-- rights (person key alone, across campaigns). One index entry fewer per contact stored.
ALTER TABLE contacts DROP CONSTRAINT contacts_campaign_id_person_key_key;
ALTER TABLE contacts ADD CONSTRAINT contacts_person_campaign UNIQUE (person_key, campaign_id);
DROP INDEX contacts_person;
