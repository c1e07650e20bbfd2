-- Reveals of masked card fields (the provisional AMELI code) are audited in the same trail as
-- card views (action 'reveal'), with the field revealed.
ALTER TABLE card_audit ADD COLUMN field text NOT NULL DEFAULT '';
