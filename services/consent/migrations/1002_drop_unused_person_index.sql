-- Decisions are read by contact id (rights export, rekey) and deleted by campaign (purge):
-- the index by person key was written for every contact and read by nothing.
DROP INDEX decisions_person;
